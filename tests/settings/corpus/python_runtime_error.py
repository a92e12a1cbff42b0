# expect: NameError | line 3
models = [
    ModelSettings(model_name="churn", model_file="model_code/model.py"),
]
