"""Places to run a bundle other than a local child process: ``notebook_deploy.targets.ray`` (Ray Serve).

Each target imports its platform's library only when called, so ``import notebook_deploy`` never does.
"""
