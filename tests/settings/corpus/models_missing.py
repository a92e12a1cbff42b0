# expect: defines no `models`
model = {"model_name": "churn", "model_file": "model_code/model.py"}
