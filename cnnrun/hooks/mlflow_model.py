"""The MLflow model of a run (logger=mlflow): model.keras served with its class names.

MLflow loads this file as a "model from code" (mlflow.pyfunc.log_model(python_model=<this file>)): it needs Keras,
NumPy and pandas where it is served, not cnnrun. Its answer to a batch of images (uint8, the run's shape, raw
0-255 pixels as model.keras takes them) is one row per image: the probability of each class under that class's
name, and `class`, the most likely one.
"""

import json

import mlflow.pyfunc
from mlflow.models import set_model


class Classifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import keras

        self.model = keras.models.load_model(context.artifacts["model"], compile=False, safe_mode=True)
        with open(context.artifacts["class_names"], encoding="utf-8") as f:
            self.names = json.load(f)

    def predict(self, context, model_input, params=None):
        import numpy as np
        import pandas as pd

        probs = np.asarray(self.model.predict(np.asarray(model_input, dtype="uint8"), verbose=0), dtype="float64")
        table = pd.DataFrame(probs, columns=self.names)
        table["class"] = [self.names[k] for k in probs.argmax(axis=1)]
        return table


set_model(Classifier())
