"""Data for training and calibration: decoding, sampling, augmentation, the synthetic benchmark."""
