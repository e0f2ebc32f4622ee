"""Model pipeline: Keras → int8 .tflite → head read/patch → C array. TensorFlow only in ``build``."""
