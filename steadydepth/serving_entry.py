"""Models-from-code entry point of the smoother pyfunc: MLflow runs this file when it loads the model, so the
PythonModel is built from code, never unpickled (see steadydepth/serving.py)."""

from mlflow.models import set_model

from steadydepth.serving import SmootherPyfunc

set_model(SmootherPyfunc())
