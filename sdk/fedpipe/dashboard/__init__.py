"""`fedpipe dashboard`: a web page that follows runs in MLflow (see docs/dashboard.md)."""
