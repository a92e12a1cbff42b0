# expect: model 'churn' | field 'cpu' | greater than 0
from akerbp.mlops import ModelSettings

models = [ModelSettings(model_name="churn", model_file="model_code/model.py", cpu=-0.5)]
