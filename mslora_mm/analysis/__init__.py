from .params import count_parameters, format_parameter_table

__all__ = ['count_parameters', 'format_parameter_table']
