import pytest

from talkserve.text import RequestError, SentenceStream, decode_text, split_sentences


def test_split_keeps_unfinished_tail():
    done, rest = split_sentences("Hello there. How are you? I am fi")
    assert done == ["Hello there.", "How are you?"]
    assert rest == " I am fi"


def test_decimal_point_does_not_end_a_sentence():
    done, rest = split_sentences("It costs 3.5 dollars. Ok")
    assert done == ["It costs 3.5 dollars."]
    assert rest == " Ok"


def test_closing_quote_stays_with_its_sentence():
    done, rest = split_sentences('He said "stop!" Then left.')
    assert done == ['He said "stop!"']
    assert rest == " Then left."


def test_stream_emits_each_sentence_once_as_soon_as_complete():
    stream = SentenceStream()
    pieces = ["Hel", "lo", ".", " Who", " are you", "?", " Bye"]
    emitted = [stream.feed(p) for p in pieces]
    # "Hello." is only complete once the following space arrives (could be "Hello.5" otherwise).
    assert emitted == [[], [], [], ["Hello."], [], [], ["Who are you?"]]
    assert stream.flush() == ["Bye"]
    assert stream.flush() == []


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "text: is empty"),
    (b"   ", "text: is empty"),
    (b"\xff\xfe", "text: not valid UTF-8"),
    (b"a\x00b", "text: contains a NUL"),
    (b"x" * 11, "text: is 11 characters, the limit is 10"),
])
def test_decode_text_names_the_field_and_problem(raw, message):
    with pytest.raises(RequestError) as e:
        decode_text(raw, "text", max_chars=10)
    assert str(e.value).startswith(message)
    assert e.value.field == "text"


def test_decode_text_normalises():
    assert decode_text("  cafe\u0301 ".encode(), max_chars=10) == "caf\u00e9"


def test_stream_error_status_restores_core_invalid_arg_only():
    from tritonclient.utils import InferenceServerException

    from talkserve.client import stream_error_status

    dropped = InferenceServerException("[request id: <id_unknown>] unexpected shape for input 'text' for model 'm'")
    assert stream_error_status(dropped) == "INVALID_ARGUMENT"
    ours = InferenceServerException("in ensemble 'talking_head', avatar_id: 'x' is not registered")
    assert stream_error_status(ours) == "INVALID_ARGUMENT"
    assert stream_error_status(InferenceServerException("Stub process 'llm_0_0' is not healthy.")) == "UNKNOWN"
    assert stream_error_status(InferenceServerException("stub died: text went missing")) == "UNKNOWN"
    assert stream_error_status(InferenceServerException("x", status="StatusCode.UNAVAILABLE")) == "UNAVAILABLE"
