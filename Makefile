# Thin wrappers over launch/ scripts; each one installs what it needs first.
.PHONY: demo test build docs clean

demo:
	bash launch/demo.sh

test:
	bash launch/test.sh

build:
	bash launch/build.sh

docs: build
	bash launch/gen_docs.sh

clean:
	rm -rf build
