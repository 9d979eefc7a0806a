from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class SchedulerJSONParser(JSONParser):
    """DRF's JSON parser, with a 400 for bodies nested too deeply to decode.

    Python's decoder raises RecursionError on ``[[[[…`` a few thousand levels
    deep; DRF only turns ValueError into a ParseError, so it would be a 500.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("The request body is nested too deeply.") from None
