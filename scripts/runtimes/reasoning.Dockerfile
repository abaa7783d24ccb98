# The reasoning runtime: the web runtime's browser and the code runtime's executor as tools of an
# LLM loop. Python comes with agent-base, so this is the web image plus the executor.
FROM bench/runtime-web:latest
COPY python/python_executor.py /runtime/python_executor.py
COPY node/ /runtime/
CMD ["sleep", "infinity"]
