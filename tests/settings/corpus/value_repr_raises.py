# expect: model #1 | field 'model_name' | <Name object whose repr() fails> is not text | line 8
class Name:
    def __repr__(self):
        raise ValueError("no repr")


models = [
    {"model_name": Name(), "model_file": "model_code/model.py"},
]
