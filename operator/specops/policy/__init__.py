"""The fallback policy (pure): ``state`` holds its types, ``rules`` judges one evaluation window,
``decide`` turns the verdict into the next mode.  Import from ``specops.policy.decide``, which
re-exports what callers need."""
