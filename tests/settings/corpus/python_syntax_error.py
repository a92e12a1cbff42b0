# expect: syntax error | line 3
models = [
    {"model_name": "churn" "model_file": "model_code/model.py"},
]
