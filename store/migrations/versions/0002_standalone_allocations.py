"""standalone binds: ARQs whose device rayborg chose, and the Placement allocations it owes

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('extended_accelerator_requests', schema=None) as batch_op:
        # Existing ARQs were all bound by Nova (or not at all): not standalone.
        batch_op.add_column(sa.Column('standalone', sa.Boolean(), server_default=sa.false(), nullable=False))

    op.create_table('standalone_allocations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('consumer', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('dirty', sa.Boolean(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('pushed', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_standalone_allocations')),
    sa.UniqueConstraint('consumer', name=op.f('uq_standalone_allocations_consumer'))
    )
    with op.batch_alter_table('standalone_allocations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_standalone_allocations_dirty'), ['dirty'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('standalone_allocations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_standalone_allocations_dirty'))
    op.drop_table('standalone_allocations')
    with op.batch_alter_table('extended_accelerator_requests', schema=None) as batch_op:
        batch_op.drop_column('standalone')
