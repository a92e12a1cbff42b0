# expect: model 'churn' | field 'analytics.sample_inputs' | greater than or equal to 0
from akerbp.mlops import ModelSettings

models = [ModelSettings(model_name="churn", model_file="model_code/model.py", analytics={"sample_inputs": -0.5})]
