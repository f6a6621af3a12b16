# The container engine and the image; included by the main Makefile. hack/engine.sh explains the engine
# (a private dockerd with no network of its own) and how the image is built without a registry.
.PHONY: image engine engine-env engine-stop

# ferry:dev from the Dockerfile, on a base made from Debian's packages; cached by content hash.
image:
	@hack/engine.sh image

engine:
	@hack/engine.sh start && hack/engine.sh env

# `make -s engine-env` prints DOCKER_HOST=… of the running engine, for `export $(make -s engine-env)`.
engine-env:
	@hack/engine.sh env

engine-stop:
	@hack/engine.sh stop
