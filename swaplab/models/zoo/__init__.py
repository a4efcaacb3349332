"""The generative-model zoo: the classic models every face swapper descends from, on one trainer."""
