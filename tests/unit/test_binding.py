"""CertificateBinding: each mode against each answer of the registry and the subject."""

from __future__ import annotations

import pytest

from backbone import edxml, signing

from ..conftest import RECIPIENTS, SENDER, Signer, make_document

# mode, registry says, subject says -> bound
TABLE = [
    ("registry", True, True, True),
    ("registry", True, False, True),
    ("registry", False, True, False),
    ("registry", False, False, False),
    ("subject", True, True, True),
    ("subject", True, False, False),
    ("subject", False, True, True),
    ("subject", False, False, False),
    ("either", True, True, True),
    ("either", True, False, True),
    ("either", False, True, True),
    ("either", False, False, False),
]


class Registry:
    """Says ``answer`` to every question and remembers the questions."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked: list[tuple[str, str]] = []

    async def __call__(self, fingerprint: str, agency: str) -> bool:
        self.asked.append((fingerprint, agency))
        return self.answer


@pytest.fixture(scope="module")
def verified(trust: signing.TrustStore, signers: dict[str, Signer]) -> signing.Verified:
    """A package signed by G22's certificate, whose subject names G22 only."""
    signed = signers["G22"].sign(edxml.build(make_document()))
    return signing.Verifier(trust, None).verify(signed)


@pytest.mark.parametrize(("mode", "registry_says", "subject_says", "bound"), TABLE)
async def test_each_mode(
    verified: signing.Verified,
    mode: signing.binding.Mode,
    registry_says: bool,
    subject_says: bool,
    bound: bool,
) -> None:
    registry = Registry(registry_says)
    agency = SENDER if subject_says else RECIPIENTS[0]
    binding = signing.CertificateBinding(mode, "UID", registry)
    assert await binding.binds(verified, agency) is bound
    asked = registry.asked
    assert asked == ([] if mode == "subject" else [(verified.fingerprint, agency)])


async def test_a_subject_binding_object_is_used_as_given(verified: signing.Verified) -> None:
    cn = signing.SubjectBinding("CN")  # the CN of dev certificates is the identifier too
    binding = signing.CertificateBinding("subject", cn, Registry(False))
    assert binding.subject is cn
    assert await binding.binds(verified, SENDER)


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown certificate binding 'both'"):
        signing.CertificateBinding("both", "UID", Registry(True))  # type: ignore[arg-type]
