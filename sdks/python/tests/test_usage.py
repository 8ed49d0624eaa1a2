"""Provider usage -> Tally usage, where input_tokens INCLUDES cache reads and writes."""

from types import SimpleNamespace as Obj

import pytest

from tally import StreamAccumulator, Usage, map_usage, model_from_response, usage_from_response


def test_openai_chat_completions_prompt_tokens_already_include_cached_ones():
    response = {"model": "gpt-4o-2024-08-06", "usage": {"prompt_tokens": 1200, "completion_tokens": 300,
                                                        "total_tokens": 1500,
                                                        "prompt_tokens_details": {"cached_tokens": 1000}}}
    assert usage_from_response(response) == Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=1000)
    assert model_from_response(response) == "gpt-4o-2024-08-06"


def test_openai_sdk_objects_read_like_dicts():
    usage = Obj(prompt_tokens=50, completion_tokens=7, total_tokens=57,
                prompt_tokens_details=Obj(cached_tokens=None, audio_tokens=0), completion_tokens_details=None)
    assert usage_from_response(Obj(model="gpt-4o-mini", usage=usage)) == Usage(50, 7, 0, 0)


def test_openai_responses_api_input_tokens_include_cached_ones():
    response = Obj(model="gpt-4.1", usage=Obj(input_tokens=900, output_tokens=120, total_tokens=1020,
                                              input_tokens_details=Obj(cached_tokens=512),
                                              output_tokens_details=Obj(reasoning_tokens=0)))
    assert usage_from_response(response) == Usage(input_tokens=900, output_tokens=120, cache_read_tokens=512)


def test_anthropic_input_tokens_exclude_cache_so_both_are_added():
    response = {"model": "claude-sonnet-4-20250514", "usage": {
        "input_tokens": 100, "output_tokens": 250,
        "cache_read_input_tokens": 2000, "cache_creation_input_tokens": 300}}
    usage = usage_from_response(response)
    assert usage == Usage(input_tokens=100 + 2000 + 300, output_tokens=250, cache_read_tokens=2000,
                          cache_write_tokens=300)
    assert usage.input_tokens >= usage.cache_read_tokens + usage.cache_write_tokens


def test_anthropic_objects_with_cache_fields_set_to_none():
    usage = Obj(input_tokens=40, output_tokens=9, cache_read_input_tokens=None, cache_creation_input_tokens=12,
                server_tool_use=None)
    assert map_usage(usage) == Usage(input_tokens=52, output_tokens=9, cache_write_tokens=12)
    plain = Obj(input_tokens=40, output_tokens=9, cache_read_input_tokens=None, cache_creation_input_tokens=None)
    assert map_usage(plain) == Usage(input_tokens=40, output_tokens=9)


def test_other_shapes():
    gemini = {"model_version": "gemini-2.5-flash", "usage_metadata": {
        "prompt_token_count": 800, "candidates_token_count": 60, "thoughts_token_count": 40,
        "cached_content_token_count": 500}}
    assert usage_from_response(gemini) == Usage(input_tokens=800, output_tokens=100, cache_read_tokens=500)
    assert model_from_response(gemini) == "gemini-2.5-flash"
    deepseek = {"usage": {"prompt_tokens": 300, "completion_tokens": 20, "prompt_cache_hit_tokens": 256,
                          "prompt_cache_miss_tokens": 44}}
    assert usage_from_response(deepseek) == Usage(300, 20, 256, 0)


@pytest.mark.parametrize("response", [None, {}, {"usage": None}, {"usage": {"foo": 1}}, "text", Obj(choices=[])])
def test_no_usage(response):
    assert usage_from_response(response) is None


def test_cached_tokens_never_exceed_the_input():
    assert map_usage({"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 50}}) \
        == Usage(10, 1, 10, 0)


def test_openai_stream_usage_comes_on_the_last_chunk():
    chunks = [Obj(model="gpt-4o-2024-08-06", choices=[Obj(delta=Obj(content=t))], usage=None) for t in ("a", "b")]
    chunks.append(Obj(model="gpt-4o-2024-08-06", choices=[], usage=Obj(
        prompt_tokens=30, completion_tokens=2, prompt_tokens_details=Obj(cached_tokens=16))))
    acc = StreamAccumulator()
    for chunk in chunks:
        acc.add(chunk)
    assert acc.usage() == Usage(30, 2, 16, 0)
    assert acc.model == "gpt-4o-2024-08-06"


def test_anthropic_stream_merges_message_start_and_message_delta():
    events = [
        {"type": "message_start", "message": {"model": "claude-3-5-haiku-20241022", "usage": {
            "input_tokens": 12, "output_tokens": 1, "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 0}}},
        {"type": "content_block_delta", "delta": {"text": "hi"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 42}},
        {"type": "message_stop"},
    ]
    acc = StreamAccumulator()
    for event in events:
        acc.add(event)
    assert acc.usage() == Usage(input_tokens=1012, output_tokens=42, cache_read_tokens=1000)
    assert acc.model == "claude-3-5-haiku-20241022"


def test_responses_api_stream_reads_the_completed_event():
    acc = StreamAccumulator()
    acc.add({"type": "response.output_text.delta", "delta": "x"})
    acc.add({"type": "response.completed", "response": {"model": "gpt-4.1", "usage": {
        "input_tokens": 70, "output_tokens": 5, "input_tokens_details": {"cached_tokens": 64}}}})
    assert acc.usage() == Usage(70, 5, 64, 0)


def test_a_stream_without_usage_has_none():
    acc = StreamAccumulator()
    acc.add({"choices": []})
    assert acc.usage() is None
