"""What training costs: the shared measures (``measure``: the timer, FLOP
count, fixed images), memory (``memory``), parameters (``params``), the
benchmark's modes (``benchmark``) and each adapter's own cost
(``site_costs``)."""
