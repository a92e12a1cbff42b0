# expect: model 'churn' | field 'secrets[0]' | longer than 15 characters
from akerbp.mlops import ModelSettings

models = [ModelSettings(model_name="churn", model_file="model_code/model.py", secrets=["a-very-long-secret-name"])]
