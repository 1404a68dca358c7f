"""fedpipe: federated learning as Kubeflow Pipelines components, tracked in MLflow."""

__version__ = "0.1.0"
