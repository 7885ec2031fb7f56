"""The servers the serving benchmark compares: Serve variants (in a Ray subprocess), a FastAPI peer over
the project's parser and ONNX Runtime code, and a BentoML service (in its own virtual environment)."""
