"""Model families: REQA, MetaIQA, HCL (one module each). Import the family you need, e.g. `from keras_iqa.models.reqa import REQA`."""
