"""Where promotion is decided: MLflow Model Registry, the champion gate, the Vertex AI mirror."""
