"""daemon lease: one `rayborg serve` per database, and where the CLI finds it

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-09
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('daemon_lease',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('hostname', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('machine', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('process_start', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('api_host', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('api_port', sa.Integer(), nullable=False),
    sa.Column('ray_address', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('dashboard_url', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('database_url', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('started_at', sa.Float(), nullable=False),
    sa.Column('heartbeat_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_daemon_lease'))
    )


def downgrade() -> None:
    op.drop_table('daemon_lease')
