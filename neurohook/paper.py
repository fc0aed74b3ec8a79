"""The reference paper's vocabulary in one place: its tasks, what its models were trained for, and the
thresholds its findings are judged by (sections 5-7)."""

from __future__ import annotations

__all__ = ["COMPLEX_TASKS", "DIALECT_HINTS", "GAP", "PAPER_TASKS", "SIMPLE_TASKS", "SMALL_SET", "SPEAKER_HINTS",
           "TASK_COLUMNS", "TASK_NAMES", "TRAINED_FOR"]

#: The paper's probing tasks, in its order, and their names.
PAPER_TASKS = ("GC", "SV", "LID", "DID", "CC")
TASK_NAMES = {"GC": "gender", "SV": "speaker verification", "LID": "language", "DID": "regional dialect",
              "CC": "channel"}
#: The manifest column each task of the built-in corpus probes.
TASK_COLUMNS = {"GC": "gender", "LID": "language", "DID": "accent", "CC": "channel"}
#: What each built-in model was trained for (the report uses it to pick the speaker and dialect models).
TRAINED_FOR = {"adi-cnn": "DID", "sre-cnn": "SV", "st-base": "reconstruction", "st-large": "reconstruction",
               "resemblyzer": "SV", "silero-vad": "voice activity", "crepe-tiny": "pitch", "crepe-full": "pitch",
               "pesto": "pitch"}
SIMPLE_TASKS = ("GC", "CC")  # properties the paper calls simple (section 6.4 ii)
COMPLEX_TASKS = ("LID", "DID")  # the complex ones measured by probes (SV's Neu_t is per layer, not comparable)
GAP = 0.05  # the paper's 5-point threshold (section 6.2, GC), as a fraction
SMALL_SET = 50.0  # a minimal set of at most this % of the neurons counts as small
#: Words in a model's name that say it is a speaker (or dialect) model, when its entry does not.
SPEAKER_HINTS = ("sre", "speaker", "spk", "xvector", "ecapa", "resemblyzer")
DIALECT_HINTS = ("adi", "dialect", "did")
