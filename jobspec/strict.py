"""Number and boolean types for request bodies: JSON's own types, never coerced. Pydantic's lax
mode would take ``"10"`` and ``true`` as the integer 10 and 1, and ``1`` as ``true``."""

from typing import Annotated

from pydantic import AllowInfNan, Strict, StrictBool

Int = Annotated[int, Strict()]  # 10; not "10", 10.0 or true
Float = Annotated[float, Strict(), AllowInfNan(False)]  # 0.5 or 1; not "0.5", true or NaN
Bool = StrictBool  # true or false; not 1 or "true"

__all__ = ["Bool", "Float", "Int"]
