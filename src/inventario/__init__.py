"""inventario: a retail inventory service (stock, supplier invoices read by an LLM, pricing)
that stays useful while PostgreSQL, Redis, S3 or the OpenAI API fail, built on brownout.
"""

__version__ = "0.1.0"
