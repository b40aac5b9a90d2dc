"""The served llm's tokenizer (tokenizers + jinja2, no transformers) gives transformers' ids."""

from __future__ import annotations

import pytest

from talkserve.recipe import STARTER_LLM
from talkserve.runtime.generate import prompt_ids
from talkserve.runtime.tokenizer import ChatTokenizer, TokenizerError, check_same_as_transformers

CHATML = ("{% for message in messages %}{% if message['role'] not in ['system', 'user', 'assistant'] %}"
          "{{ raise_exception('unknown role ' + message['role']) }}{% endif %}"
          "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] | trim + '<|im_end|>\\n' }}"
          "{% if loop.last and add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}{% endfor %}")
NO_SYSTEM = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
             "{{ raise_exception('System role not supported') }}{% endif %}"
             "{% for m in messages %}{{ '<turn>' + m['role'] + ': ' + m['content'] + '</turn>' }}{% endfor %}"
             "{% if add_generation_prompt %}<turn>assistant: {% endif %}")


def _tokenizer(tmp_path, template: str, **special):
    """A byte-level BPE trained here, saved as transformers saves a fast tokenizer, with `template`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|im_start|>", "<|im_end|>", "<bos>", "<turn>", "</turn>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["How does this work? Tell me a joke.", "Why did the GPU cross the road?"] * 50, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=template, **special)
    fast.save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize("template, special", [(CHATML, {"eos_token": "<|im_end|>"}),
                                               (NO_SYSTEM, {"bos_token": "<bos>", "eos_token": "</turn>"})])
def test_other_chat_templates_tokenise_as_transformers_does(tmp_path, template, special):
    directory = _tokenizer(tmp_path, template, **special)
    check_same_as_transformers(directory)
    ours = ChatTokenizer(directory)
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert ours.decode(prompt_ids(ours, "How does this work?", "Be brief.", history)).count("How does this work?") == 1


def test_the_starter_tokenises_as_transformers_does():
    check_same_as_transformers(STARTER_LLM)
    assert ChatTokenizer(STARTER_LLM).eos_token_id is not None


def test_a_template_error_and_a_missing_tokenizer_are_named(tmp_path):
    ours = ChatTokenizer(_tokenizer(tmp_path / "chatml", CHATML, eos_token="<|im_end|>"))
    with pytest.raises(Exception, match="unknown role tool"):
        ours.apply_chat_template([{"role": "tool", "content": "x"}])
    (tmp_path / "slow").mkdir()
    with pytest.raises(TokenizerError, match=r"no tokenizer\.json"):
        ChatTokenizer(tmp_path / "slow")
