"""CalibConfig: spec defaults, round trips, TOML errors, fingerprints."""

from __future__ import annotations

import pytest

import calibclip
from calibclip.calib import CalibConfig
from calibclip.errors import UserError


def test_defaults_are_the_specs():
    c = calibclip.CalibConfig()
    assert (c.cve, c.dcc, c.disc_sim) == (True, True, True)
    assert (c.target_sigma, c.tau_d, c.tau_s, c.gamma) == (1.5, 2.0, 3.0, 0.5)
    assert (c.dcc_k, c.dcc_mask, c.rerank_k, c.lam) == (3, "keys", 100, 0.5)


def test_dict_round_trip_and_int_to_float():
    c = CalibConfig(cve=False, gamma=1, dcc_mask="delete")
    assert c.gamma == 1.0 and isinstance(c.gamma, float)
    assert CalibConfig.from_dict(c.to_dict()) == c


def test_from_toml_top_level_and_table(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('cve = false\ndcc_k = 2\ndcc_mask = "pad-token"\nlam = 0.25\n')
    c = CalibConfig.from_toml(p)
    assert (c.cve, c.dcc_k, c.dcc_mask, c.lam, c.tau_d) == (False, 2, "pad-token", 0.25, 2.0)
    p.write_text("[calib]\nrerank_k = 50\n")
    assert CalibConfig.from_toml(p).rerank_k == 50


def test_from_toml_errors_name_file_and_key(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("tau_x = 1.0\n")
    with pytest.raises(UserError, match=r"bad\.toml.*tau_x"):
        CalibConfig.from_toml(p)
    p.write_text('dcc_mask = "zero"\n')
    with pytest.raises(UserError, match=r"bad\.toml.*dcc_mask"):
        CalibConfig.from_toml(p)
    p.write_text('dcc_k = "three"\n')
    with pytest.raises(UserError, match=r"bad\.toml.*dcc_k"):
        CalibConfig.from_toml(p)
    p.write_text("cve = \n")
    with pytest.raises(UserError, match=r"bad\.toml.*TOML"):
        CalibConfig.from_toml(p)
    with pytest.raises(UserError, match="no such"):
        CalibConfig.from_toml(tmp_path / "missing.toml")


@pytest.mark.parametrize("kw", [dict(gamma=1.5), dict(tau_d=4.0, tau_s=3.0), dict(rerank_k=0), dict(dcc_k=-1),
                                dict(cve=1)])
def test_invalid_values_raise(kw):
    with pytest.raises(UserError):
        CalibConfig(**kw)


def test_fingerprint_stable_and_sensitive():
    assert CalibConfig().fingerprint() == "a294ed97596d"  # sha1 of sorted JSON: same across processes
    assert CalibConfig().fingerprint() == CalibConfig.from_dict(CalibConfig().to_dict()).fingerprint()
    assert CalibConfig(lam=0.4).fingerprint() != CalibConfig().fingerprint()
    # query-time knobs do not change the image features' fingerprint; CVE knobs do
    assert CalibConfig(lam=0.4, dcc_k=1).image_fingerprint() == CalibConfig().image_fingerprint()
    assert CalibConfig(tau_s=4.0).image_fingerprint() != CalibConfig().image_fingerprint()
