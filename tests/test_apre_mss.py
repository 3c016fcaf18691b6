"""APRE and mean shift against hand-computed reference values (Tan et al., MSS-PAE: the APRE formula and mean shift)."""
import pytest
import torch

from kernels.apre import apre
from kernels.mean_shift import knn_mean, mean_shift, shift_reference

f64 = dict(dtype=torch.float64)


@pytest.mark.parametrize("x, mu, raw, expected", [
    ([0.0, 1.0], [0.5, 0.5], [0.0, 0.0], {(1, 1): -0.0116598737, (0.5, 2): -1.1053254181}),
    ([1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [1.0, -1.0, 0.0], {(1, 1): 12.6359337065, (0.5, 2): 4.4359746747}),
])
def test_apre_matches_reference_values(x, mu, raw, expected):
    for (alpha, beta), value in expected.items():
        got = apre(torch.tensor([x], **f64), torch.tensor([mu], **f64), torch.tensor([raw], **f64), alpha, beta)
        assert float(got) == pytest.approx(value, abs=1e-8)


def test_mean_shift_matches_reference_values():
    reference = torch.tensor([[0.0], [1.0], [3.0], [10.0]], **f64)
    queries = torch.tensor([[4.0], [-2.0]], **f64)
    steps = shift_reference(reference, k=2, iterations=3)
    assert [s.flatten().tolist() for s in steps[1:]] == [[0.5, 0.5, 2, 6.5], [0.5, 0.5, 1.25, 4.25], [0.5, 0.5, 0.875, 2.75]]
    for iterations, expected in ((1, [3.5, -1]), (2, [2.75, -0.25]), (3, [2.0, 0.125])):
        assert mean_shift(reference, queries, k=2, iterations=iterations)[1].flatten().tolist() == expected
    shifted_reference, shifted = mean_shift(reference, queries, k=3, iterations=1)
    assert shifted_reference.flatten().tolist() == pytest.approx([4 / 3, 4 / 3, 4 / 3, 14 / 3], abs=1e-12)
    assert shifted.flatten().tolist() == pytest.approx([8 / 3, -1 / 3], abs=1e-12)


def test_chunked_neighbour_means_equal_one_block():
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(300, 5, generator=generator, **f64)
    queries = torch.randn(70, 5, generator=generator, **f64)
    whole = knn_mean(queries, reference, k=7)
    assert torch.equal(knn_mean(queries, reference, k=7, max_block=300 * 3), whole)  # 3 queries per block


@pytest.mark.parametrize("d, encoder, decoder", [
    (10, [5], []),                    # d < 20: d -> d/2 -> d
    (64, [32, 16], [32]),             # 20..99
    (150, [75, 38, 19], [38, 75]),    # 100..199 (Python round: 37.5 -> 38, 18.75 -> 19)
    (274, [137, 68, 17], [68, 137]),  # >= 200: the latent is d/16
])
def test_autoencoder_widths_follow_the_authors_rule(d, encoder, decoder):
    from kernels.autoencoder import AutoEncoder

    for probabilistic in (True, False):
        widths = [layer.out_features for layer in AutoEncoder(d, probabilistic).net if hasattr(layer, "out_features")]
        assert widths == [*encoder, *decoder, 2 * d if probabilistic else d]


def test_training_is_seeded_and_lowers_the_loss():
    from kernels.autoencoder import AutoEncoder, fit

    data = torch.randn(256, 24, generator=torch.Generator().manual_seed(1))
    scores = []
    for _ in range(2):
        torch.manual_seed(3)
        model = AutoEncoder(24, probabilistic=True)
        before = model.training_loss(data).item()
        fit(model, data, epochs=200)
        assert model.training_loss(data).item() < before
        scores.append(model.score(data))
    assert torch.equal(scores[0], scores[1])
