"""The streaming consumer: Kafka in, segments and metrics out.

Data flows one way: ``kafka`` (the only code that talks to kafka-python) ->
``runtime`` (run loop, pipeline over :mod:`state` and :mod:`encoders`, checkpoints,
outputs) -> ``contracts`` (what is published) and ``observability`` (metrics,
drift, logs); ``cli`` is the command line; ``settings`` is read by every layer.
"""
