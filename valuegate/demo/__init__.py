"""The demo: simulators replaying recorded plant data, an edge agent and the cloud, ending in a value report."""
