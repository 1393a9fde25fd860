"""Unity ML-Agents training pipeline on MLflow."""
import warnings

# mlagents imports pkg_resources (hence setuptools<81 in the lock); its deprecation notice is noise.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
