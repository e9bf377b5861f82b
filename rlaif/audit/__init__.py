"""The calibration audit: how far an AI judge agrees with a human gold set, with honest uncertainty."""
