"""Compatibility with the scripts users already have: the transformers v4 spellings (accepted with a
``FutureWarning`` naming the v5 one) and the fields transformers v5 added to ``TrainingArguments``."""
