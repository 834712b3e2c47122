"""Tasks compose data, models, methods and the engine; none has a training loop of its own."""
