"""A stand-in Unity player build: ML-Agents' gRPC protocol from the Unity side, serving a built-in simulation.

Run it as a player (`scripts/simulated_player`, or `python -m pipeline.unity.simulated_player`): it takes
the arguments `UnityEnvironment` gives a build (`--mlagents-port`, `-nographics`, `-batchmode`,
`-logFile`), connects to the trainer's gRPC server, and behaves as the C# `RpcCommunicator` and
`Academy` of com.unity.ml-agents do, so everything on the Python side runs as it does for a real build.
"""
