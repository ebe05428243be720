"""inventario: a retail inventory service (stock, supplier invoices read by an LLM, pricing)
that stays useful while PostgreSQL, Redis, S3 or the OpenAI API fail, built on brownout.
"""

from brownout import __version__ as __version__  # one distribution, one version
