#!/bin/sh
# Count the words of the files given as arguments (the "product" the workflow tests).
cat "$@" | wc -w | tr -d ' '
