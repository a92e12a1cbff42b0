# expect: model 'churn' | field 'artifact_version': <an integer of over 1000 digits>: input should be a valid integer | line 4
from akerbp.mlops import ModelSettings

models = [ModelSettings(model_name="churn", model_file="model_code/model.py", artifact_version=10**5000)]
