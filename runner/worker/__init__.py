"""The async worker pool and the downloads it makes."""
