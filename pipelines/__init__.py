"""fedpipe's Kubeflow pipelines, built from the components in fedpipe.components."""
