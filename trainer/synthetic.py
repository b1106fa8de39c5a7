"""A synthetic world with known structure, to prove that training does what it should.

Every sample is a point in a small latent space: one of `n_concepts` concept centres plus a
per-sample variation (so two samples of one concept are still told apart). Fixed random maps
turn a latent point into what the frozen encoders would output:

- CLIP: one map for both towers, as CLIP aligns them, but the image view is shifted by a
  constant modality-gap vector (CLIP images and texts live in separate cones).
- Multilingual encoder: another map (a different dimension, unrelated to CLIP's); the Korean
  view is the English one slightly rotated and offset (the language shift).
- Every view reads the latent point slightly off (latent noise: the encoders disagree a
  little about what a sample shows, which caps the reachable recall below 1), gets its own
  output noise and is L2-normalised.

The banks are unpaired, as in real life: English captions come with both of their views
(e^I, e^K), while the image and Korean banks hold other samples of the same concepts. The
held-out test set pairs the image view and the Korean view of the same new samples, and
records each sample's concept (for measuring at the level of "shows the same kind of thing"). CLIP
and the multilingual encoder share no coordinates, so untrained heads retrieve at chance
(1 / n_test), while heads trained through the English pivot find the right pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hanclip_model.heads import l2_normalize
from trainer.train import TrainBanks

LATENT_DIM = 64
# Size of the per-sample deviation from its concept centre, relative to the centre (norm 1).
SAMPLE_VARIATION = 0.5
# Each encoder reads a sample slightly differently: noise in the latent space, which no
# head can project away, so recall stays below 1 even after perfect training.
LATENT_NOISE = 0.2
# Encoder noise per view in its output space, relative to the unit-norm clean view.
VIEW_NOISE = 0.3
# Norm of the constant offset between the CLIP image and text cones.
MODALITY_GAP = 1.0
# Angle scale of the rotation from English to Korean, and norm of the Korean offset.
LANGUAGE_ROTATION = 0.2
LANGUAGE_OFFSET = 0.3


@dataclass(frozen=True)
class SyntheticWorld:
    banks: TrainBanks
    test_images: np.ndarray  # [n_test, d_img] raw CLIP image embeddings
    test_korean: np.ndarray  # [n_test, d_txt] raw multilingual embeddings, same samples
    test_concepts: np.ndarray  # int64 [n_test]: the concept each test sample was drawn from


@dataclass(frozen=True)
class _Encoders:
    """The fixed random maps from the latent space to each encoder's output."""

    clip_map: np.ndarray  # [d_img, LATENT_DIM]
    modality_gap: np.ndarray  # [d_img]
    multilingual_map: np.ndarray  # [d_txt, LATENT_DIM]
    korean_rotation: np.ndarray  # [d_txt, d_txt], orthogonal, close to the identity
    korean_offset: np.ndarray  # [d_txt]


def _random_direction(rng: np.random.Generator, dim: int, norm: float) -> np.ndarray:
    return norm * l2_normalize(rng.standard_normal((1, dim)))[0]


def _small_rotation(rng: np.random.Generator, dim: int, scale: float) -> np.ndarray:
    # The orthogonal factor of I + small noise: a rotation near the identity.
    q, r = np.linalg.qr(np.eye(dim) + scale * rng.standard_normal((dim, dim)) / np.sqrt(dim))
    return q * np.sign(np.diag(r))


def _make_encoders(rng: np.random.Generator, d_img: int, d_txt: int) -> _Encoders:
    return _Encoders(
        clip_map=rng.standard_normal((d_img, LATENT_DIM)) / np.sqrt(LATENT_DIM),
        modality_gap=_random_direction(rng, d_img, MODALITY_GAP),
        multilingual_map=rng.standard_normal((d_txt, LATENT_DIM)) / np.sqrt(LATENT_DIM),
        korean_rotation=_small_rotation(rng, d_txt, LANGUAGE_ROTATION),
        korean_offset=_random_direction(rng, d_txt, LANGUAGE_OFFSET),
    )


def _sample_concepts(
    rng: np.random.Generator, centres: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """n samples: the concept each is drawn from, and its latent point."""
    concepts = rng.integers(0, centres.shape[0], size=n)
    variation = rng.standard_normal((n, LATENT_DIM)) / np.sqrt(LATENT_DIM)
    return concepts, l2_normalize(centres[concepts] + SAMPLE_VARIATION * variation)


def _sample_latents(rng: np.random.Generator, centres: np.ndarray, n: int) -> np.ndarray:
    return _sample_concepts(rng, centres, n)[1]


def _perceive(rng: np.random.Generator, latents: np.ndarray) -> np.ndarray:
    """What one encoder takes a sample to be: its latent point, slightly off."""
    noise = rng.standard_normal(latents.shape) / np.sqrt(LATENT_DIM)
    return l2_normalize(latents + LATENT_NOISE * noise)


def _observe(rng: np.random.Generator, clean: np.ndarray) -> np.ndarray:
    """An encoder's output: the clean view plus its own noise, L2-normalised, float32."""
    noise = rng.standard_normal(clean.shape) / np.sqrt(clean.shape[1])
    return l2_normalize(l2_normalize(clean) + VIEW_NOISE * noise)


def _clip_text(rng: np.random.Generator, enc: _Encoders, latents: np.ndarray) -> np.ndarray:
    return _observe(rng, _perceive(rng, latents) @ enc.clip_map.T)


def _clip_image(rng: np.random.Generator, enc: _Encoders, latents: np.ndarray) -> np.ndarray:
    clip = l2_normalize(_perceive(rng, latents) @ enc.clip_map.T)
    return _observe(rng, clip + enc.modality_gap)


def _english(rng: np.random.Generator, enc: _Encoders, latents: np.ndarray) -> np.ndarray:
    return _observe(rng, _perceive(rng, latents) @ enc.multilingual_map.T)


def _korean(rng: np.random.Generator, enc: _Encoders, latents: np.ndarray) -> np.ndarray:
    english = l2_normalize(_perceive(rng, latents) @ enc.multilingual_map.T)
    return _observe(rng, english @ enc.korean_rotation.T + enc.korean_offset)


def make_world(
    n_english: int,
    n_images: int,
    n_korean: int,
    n_test: int,
    d_img: int = 512,
    d_txt: int = 384,
    n_concepts: int = 200,
    seed: int = 0,
) -> SyntheticWorld:
    """Unpaired training banks and a paired image/Korean test set, all from `seed`."""
    rng = np.random.default_rng(seed)
    encoders = _make_encoders(rng, d_img, d_txt)
    centres = l2_normalize(rng.standard_normal((n_concepts, LATENT_DIM))).astype(np.float64)
    english = _sample_latents(rng, centres, n_english)
    banks = TrainBanks(
        english_clip=_clip_text(rng, encoders, english),
        english_text=_english(rng, encoders, english),
        image_bank=_clip_image(rng, encoders, _sample_latents(rng, centres, n_images)),
        korean_bank=_korean(rng, encoders, _sample_latents(rng, centres, n_korean)),
    )
    test_concepts, test = _sample_concepts(rng, centres, n_test)
    return SyntheticWorld(
        banks=banks,
        test_images=_clip_image(rng, encoders, test),
        test_korean=_korean(rng, encoders, test),
        test_concepts=test_concepts.astype(np.int64),
    )
