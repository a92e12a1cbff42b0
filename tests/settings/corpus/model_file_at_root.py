# expect: model 'churn' | field 'model_file' | must be inside a folder
models = [dict(model_name="churn", model_file="model.py")]
