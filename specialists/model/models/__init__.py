"""Bundled ONNX models for the model engine, loaded by name through importlib.resources.

- ``iforest-v1.onnx`` (``iforest-1.0.0``, the default): 100 trees, 256 samples per tree,
  contamination 0.002.
- ``iforest-v2.onnx`` (``iforest-2.0.0``, canary variant): 150 trees, 128 samples per tree,
  contamination 0.005 (more sensitive).

Both are produced by ``specialists/model/train.py`` (the commands are in its docstring): each
file holds the whole forest as one ``ai.onnx.ml.TreeEnsembleRegressor`` node summing path
lengths, plus five element-wise nodes giving sklearn's ``decision_function`` (checked against
sklearn to 1e-5 when exported).
"""
