# expect: model 'a_model_name_that_is_much_too_long_for_function_ids' | field 'model_name' | longer than 40 characters | line 6
from akerbp.mlops import ModelSettings

models = [
    ModelSettings(
        model_name="a_model_name_that_is_much_too_long_for_function_ids",
        model_file="model_code/model.py",
    )
]
