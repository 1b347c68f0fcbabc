"""Facts about MNIST and the tutorial that several modules use; this module imports nothing."""

IMAGE_SIZE = 28
NUM_CLASSES = 10
TRAIN_COUNT = 60_000
TEST_COUNT = 10_000
# Mean and standard deviation of the 60,000 training images scaled to [0, 1] (a test recomputes them).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
# Keras' defaults, which the tutorial uses: batch 32 for `fit`, Adam's learning rate 1e-3, 5 epochs.
TUTORIAL_BATCH_SIZE = 32
TUTORIAL_LR = 1e-3
TUTORIAL_EPOCHS = 5
TUTORIAL_HIDDEN = 128
KERAS_ADAM_EPS = 1e-7  # Keras' Adam default; torch's is 1e-8
NOT_A_DIGIT = 10  # the label of a synthetic training non-digit (`--data.non_digits`); its target: every digit alike
