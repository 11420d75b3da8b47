"""DCC steps (spec §2) on hand-made tensors."""

from __future__ import annotations

import torch

from calibclip.calib import delete_tokens, eot_attention, select_general, word_token_mask
from calibclip.calib.dcc import is_word_piece


def test_is_word_piece():
    assert is_word_piece("car</w>") and is_word_piece("back") and is_word_piece("3</w>")
    assert not is_word_piece(",</w>") and not is_word_piece("!</w>") and not is_word_piece("$</w>")


def test_eot_attention_takes_each_rows_eot_and_averages_heads():
    attn = torch.zeros(2, 2, 3, 3)
    attn[0, 0, 2] = torch.tensor([0.2, 0.2, 0.6])
    attn[0, 1, 2] = torch.tensor([0.4, 0.4, 0.2])
    attn[1, 0, 1] = torch.tensor([0.5, 0.5, 0.0])
    attn[1, 1, 1] = torch.tensor([0.1, 0.9, 0.0])
    e = eot_attention(attn, torch.tensor([2, 1]))
    assert torch.allclose(e, torch.tensor([[0.3, 0.3, 0.4], [0.3, 0.7, 0.0]]))


def test_word_token_mask_excludes_sot_eot_padding_and_non_words():
    vocab = torch.tensor([False, True, True, False, True, True])  # ids 0 and 3 are punctuation/special
    ids = torch.tensor([[4, 1, 3, 2, 5, 5], [4, 2, 5, 0, 0, 0]])  # 4 = SOT here, 5 = EOT/pad
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]])
    eot = torch.tensor([4, 2])
    got = word_token_mask(ids, mask, vocab, eot)
    assert got.tolist() == [[False, True, False, True, False, False], [False, True, False, False, False, False]]


def test_select_general_top_k_words_by_eot_attention():
    e = torch.tensor([[0.1, 0.5, 0.3, 0.4, 0.9, 0.2]])
    words = torch.tensor([[False, True, True, True, False, True]])  # 0.9 is not a word (e.g. EOT)
    assert select_general(e, words, 2).tolist() == [[False, True, False, True, False, False]]
    # k larger than #words − min_keep: everything but the weakest word
    assert select_general(e, words, 10, min_keep=1).tolist() == [[False, True, True, True, False, False]]
    assert select_general(e, words, 0).sum() == 0


def test_select_general_ties_go_to_earlier_token_and_rows_are_independent():
    e = torch.tensor([[0.2, 0.2, 0.2, 0.1], [0.0, 0.1, 0.3, 0.2]])
    words = torch.ones(2, 4, dtype=torch.bool)
    assert select_general(e, words, 2).tolist() == [[True, True, False, False], [False, False, True, True]]


def test_delete_tokens_compacts_and_pads():
    ids = torch.tensor([[9, 5, 6, 7, 8, 0], [9, 5, 8, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]])
    drop = torch.tensor([[False, True, False, True, False, False], [False] * 6])
    new_ids, new_mask = delete_tokens(ids, mask, drop, pad_id=0)
    assert new_ids.tolist() == [[9, 6, 8, 0, 0, 0], [9, 5, 8, 0, 0, 0]]
    assert new_mask.tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]]
