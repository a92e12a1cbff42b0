# expect: model 'churn' | field 'cpu': true is a boolean, not a number | line 4
from akerbp.mlops import ModelSettings

models = [ModelSettings(model_name="churn", model_file="model_code/model.py", cpu=True)]
