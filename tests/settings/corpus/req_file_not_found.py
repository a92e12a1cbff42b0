# expect: model 'churn' | field 'req_file' | model_code/requirements.txt.model was not found | line 8
from akerbp.mlops import ModelSettings

models = [
    ModelSettings(
        model_name="churn",
        model_file="model_code/model.py",
        req_file="model_code/requirements.txt.model",
    )
]
