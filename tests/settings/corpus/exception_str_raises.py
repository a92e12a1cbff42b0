# expect: line 7 | Unprintable: <Unprintable whose message cannot be shown: its __str__ fails>
class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no message")


raise Unprintable()
